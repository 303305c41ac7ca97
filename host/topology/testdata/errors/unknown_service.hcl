node "n1" {
  service "uppercse" {}
}
