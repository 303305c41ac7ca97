node "n1" {
  inlet "web" {
    listen       = "127.0.0.1:6000"
    to           = "/service/outlet"
    max_sessions = 0
  }
}
