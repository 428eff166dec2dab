node_name = "a"
datacenter = "dc1"
server = true
bootstrap_expect = 3
retry_join = ["10.0.0.1"]
encrypt = "ZZ8Wz6eS8u5Q0Jb5uK1mN2b7pB3xQ9Yr4cT6vW8yA0E="
