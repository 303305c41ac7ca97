node "n1" {
  transport "public" {}
  connection "loop" {
    to = node.n1.transport.public
  }
}
