node "n1" {
  service "echo" {}
}

node "n2" {}

node "n1" {
  service "hop" {}
}
