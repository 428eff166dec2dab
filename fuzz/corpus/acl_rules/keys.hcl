key_prefix "" { policy = "read" }
key "secret/y" { policy = "deny" }
key_prefix "lists/" { policy = "list" }
