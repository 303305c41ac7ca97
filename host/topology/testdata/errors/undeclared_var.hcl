variable "relay_port" {
  default = 7000
}

node "n1" {
  transport "public" {
    listen = "127.0.0.1:${var.relay_prt}"
  }
}
