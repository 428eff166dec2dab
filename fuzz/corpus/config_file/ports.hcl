ports {
  http = 8500
  dns = -1
  serf_wan = 8302
}
gossip_lan {
  probe_interval = "200ms"
}
