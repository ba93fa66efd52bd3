"""Pure decision logic: no I/O, no clock reads, no database. Time is always a parameter."""
