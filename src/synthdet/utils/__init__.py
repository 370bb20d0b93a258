"""Small shared helpers: image I/O, atomic files, configs, devices, drawing."""
