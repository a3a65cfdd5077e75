"""Infrastructure: device detection, the CPU compatibility layer, distributed init, logging."""
