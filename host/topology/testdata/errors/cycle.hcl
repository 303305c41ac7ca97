node "n1" {
  transport "public" {}
  connection "to_n2" {
    to = node.n2.transport.public
  }
}

node "n2" {
  transport "public" {}
  connection "to_n1" {
    to = node.n1.transport.public
  }
}
