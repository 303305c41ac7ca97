node "n2" {
  transport "public" {}
}

node "n1" {
  transport "public" {
    listen = node.n2.transport.public
  }
}
