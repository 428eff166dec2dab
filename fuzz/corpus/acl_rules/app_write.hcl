key_prefix "app/" {
  policy = "write"
}
