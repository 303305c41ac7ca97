node "n1" {
  transport "a" {
    plugin   = "serial"
    listen   = "/dev/ttyUSB0"
    settings = { baud = 9600 }
  }
  connection "b" {
    plugin   = "serial"
    to       = "/dev/ttyUSB1"
    settings = { baud = 4800 }
  }
}
