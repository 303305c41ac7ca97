node "a" {
  transport "t" {}
  connection "c" { to = node.b.transport.t }
}

node "b" {
  transport "t" {}
  connection "c" { to = node.c.transport.t }
}

node "c" {
  transport "t" {}
  connection "c" { to = node.a.transport.t }
}
