node "n1" {
  transprt "public" {
    listen = "127.0.0.1:0"
  }
}
