"""Stand-ins for outside services that cannot run here (Twilio's cloud), speaking their real protocols."""
