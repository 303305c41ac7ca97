# serial.hcl: n1 → n2 over a serial line.
#
# n2 runs echo and uppercase behind a serial listener on its end of the line;
# n1 opens the other end. A serial line has a device at each end, so each
# node names its own: n2 listens on n2_device, n1 connects through n1_device.
# With a USB null-modem cable between two ports of one machine these are,
# for example, /dev/ttyUSB0 and /dev/ttyUSB1; without hardware, make a pair
# of connected pseudo-terminals:
#
#   socat -d -d pty,raw,echo=0,link=/tmp/ttyA pty,raw,echo=0,link=/tmp/ttyB &
#   ferry up configs/serial.hcl --var n1_device=/tmp/ttyA --var n2_device=/tmp/ttyB
#   ferry message send hello --from n1 --to /serial/%2Ftmp%2FttyA/service/uppercase
#   ferry down configs/serial.hcl --var n1_device=/tmp/ttyA --var n2_device=/tmp/ttyB
#
# The serial transport is unreliable: a frame damaged on the line is dropped
# (never delivered damaged), so a request/reply over it may need a retry.

variable "n1_device" {
  type        = string
  default     = "/dev/ttyUSB0"
  description = "n1's end of the line (a tty device path)."
}

variable "n2_device" {
  type        = string
  default     = "/dev/ttyUSB1"
  description = "n2's end of the line (a tty device path)."
}

node "n2" {
  transport "line" {
    plugin = "serial"
    listen = var.n2_device
    allow  = ["echo", "uppercase"]
    # Every setting is optional; these are the defaults spelled out. Both
    # ends must agree on the line settings.
    settings = {
      baud_rate          = 115200
      data_bits          = 8
      parity             = "none"
      stop_bits          = "1"
      max_frame_size     = 1024 # bytes per frame, header and CRC included
      heartbeat_interval = "2s"
      idle_timeout       = "10s"
    }
  }

  service "echo" {}
  service "uppercase" {}
}

node "n1" {
  connection "to_n2" {
    plugin = "serial"
    to     = var.n1_device # the near end of the line: the far end is n2's listener
    settings = {
      baud_rate = 115200
    }
  }
}
