"""What both command lines share: reading inputs, writing outputs atomically, checkpoints,
progress, endpoints and keys. Built on the core, coding and protocol; no presentation."""
