"""The GSM modem channel: PDUs, the AT dialogue, the serial channel and a modem emulator."""
