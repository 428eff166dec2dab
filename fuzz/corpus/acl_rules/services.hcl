service "web" {
  policy = "write"
  intentions = "read"
}
service_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }
