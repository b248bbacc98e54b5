"""SMS: encoding, segmenting, channels (Twilio, Kannel, GSM modem)."""
