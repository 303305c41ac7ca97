node "n1" {
  transport "public" {}
}

node "n2" {
  connection "to_n1" {
    to = node.n9.transport.public
  }
}
