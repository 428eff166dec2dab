service {
  name = "web"
  port = 80
  tags = ["v1"]
  check {
    http = "http://localhost/health"
    interval = "10s"
  }
  connect { sidecar_service {} }
}
