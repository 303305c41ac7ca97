node "n1" {
  service "echo" {}
}

node {
  service "echo" {}
}
