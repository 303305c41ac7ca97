node "n1" {
  inlet "web" {
    plugin = "tcp"
    listen = "127.0.0.1:6000"
    to     = "/service/outlet"
  }
}
