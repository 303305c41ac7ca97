node "n1" {
  connection "c" {
    to = "127.0.0.1:7000"
  }
  inlet "web" {
    listen = "127.0.0.1:6000"
    to     = [node.n1.connection.c, "/servce/outlet"]
  }
}
