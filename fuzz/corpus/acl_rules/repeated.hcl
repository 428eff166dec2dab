key "a" { policy = "read" }
key "a" { policy = "write" }
