node "n1" {
  transport "public" {
    lisen = "127.0.0.1:0"
  }
}
