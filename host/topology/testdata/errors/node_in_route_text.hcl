node "n2" {
  transport "public" {}
}

node "n1" {
  inlet "web" {
    listen = "127.0.0.1:6000"
    to     = "/node/n2/service/outlet"
  }
}
