"""Read models for managers: call and messaging reports (one definition per figure), CSV, SVG
charts, and the live agent board's state."""
