node "n1" {
  connection "to_n2" {
    plugin = "tcp"
  }
}
