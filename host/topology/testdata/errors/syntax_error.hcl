node "n1" {
  transport "public" {
    listen = "127.0.0.1:0",
  }
}
