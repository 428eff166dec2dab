dns_config {
  allow_stale = true
  max_stale = "5s"
  service_ttl = { "*" = "5s" }
  soa { min_ttl = 3 }
}
recursors = ["1.1.1.1"]
