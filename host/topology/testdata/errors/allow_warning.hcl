node "n1" {
  transport "public" {
    allow = ["echo", "uppercse"]
  }
  service "echo" {}
  service "uppercase" {}
}

node "n2" {
  transport "public" {
    allow = 7
  }
}
