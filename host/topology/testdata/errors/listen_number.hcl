node "n1" {
  transport "public" {
    listen = 7000
  }
}
