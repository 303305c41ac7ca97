node "n1" {
  transport "public" {
    plugin = "tpc"
    listen = "127.0.0.1:0"
  }
}
