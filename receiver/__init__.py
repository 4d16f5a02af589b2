"""Bob, on Mars: decodes the bits with an identical model and keeps it in lockstep."""
