# quic.hcl: n1 → n2 over QUIC.
#
# n2 runs echo and uppercase behind a QUIC listener; n1 connects to it and
# trusts it by its certificate's SHA-256 fingerprint (the pin). Make n2's
# certificate once and read its fingerprint:
#
#   openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
#       -subj /CN=ferry -keyout n2-key.pem -out n2-cert.pem
#   openssl x509 -in n2-cert.pem -noout -fingerprint -sha256
#       # sha256 Fingerprint=AB:CD:...   (the pin is sha256:AB:CD:...)
#
#   ferry up configs/quic.hcl --var cert_file=$PWD/n2-cert.pem \
#       --var key_file=$PWD/n2-key.pem --var pin=sha256:AB:CD:...
#   ferry message send hello --from n1 --to /quic/127.0.0.1:7022/service/uppercase
#   ferry down configs/quic.hcl
#
# Without cert_file and key_file, n2 would present a new certificate at
# every start (see `ferry listener show public --at n2`), and without a pin
# n1 refuses to connect. The port is a variable too: --var n2_port=7122.

variable "n2_port" {
  type        = number
  default     = 7022
  description = "UDP port n2's QUIC listener binds (0 picks a free one)."
}

variable "cert_file" {
  default     = ""
  description = "PEM certificate n2 presents (with key_file)."
}

variable "key_file" {
  default     = ""
  description = "PEM private key of cert_file."
}

variable "pin" {
  default     = ""
  description = "Fingerprint of n2's certificate, sha256:HEX (openssl's colon-separated form works)."
}

node "n2" {
  transport "public" {
    plugin = "quic"
    listen = "127.0.0.1:${var.n2_port}"
    allow  = ["echo", "uppercase"]
    settings = {
      cert_file = var.cert_file
      key_file  = var.key_file
      # Defaults spelled out; n1 and n2 use the smaller idle timeout of the two.
      keepalive_period = "5s"
      idle_timeout     = "15s" # a peer silent this long is gone
      max_connections  = 256
    }
  }

  service "echo" {}
  service "uppercase" {}
}

node "n1" {
  connection "to_n2" {
    to = node.n2.transport.public # plugin inherited from the listener: quic
    settings = {
      pin = var.pin
    }
  }
}
