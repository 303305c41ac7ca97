node "n2" {
  transport "public" {}
}

node "n1" {
  connection "to_n2" {
    to = node.n2.transport.pubic
  }
}
