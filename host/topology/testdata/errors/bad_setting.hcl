node "n1" {
  transport "line" {
    plugin   = "serial"
    listen   = "/dev/ttyUSB0"
    settings = { baud = "fast" }
  }
}
