node "n1" {
  connection "line" {
    plugin = "kafka"
    to     = "peer-topic"
  }
}
