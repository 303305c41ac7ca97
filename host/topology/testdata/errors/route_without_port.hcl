node "n1" {
  service "hop" {}
  inlet "web" {
    listen = "127.0.0.1:6000"
    to     = ["/tcp/127.0.0.1/service/outlet"]
  }
}
