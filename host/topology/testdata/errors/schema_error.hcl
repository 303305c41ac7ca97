plugin "broken" {
  path = "./bin/ferry-broken"
}

node "n1" {
  transport "t" {
    plugin = "broken"
    listen = "somewhere"
  }
}
