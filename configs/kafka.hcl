# kafka.hcl: two nodes that reach each other through Kafka topics.
#
# Each node's inbound topic is its address: n2 consumes ferry-n2 and runs
# echo and uppercase; n1 consumes ferry-n1 (where n2's replies arrive) and
# has a connection to n2's topic. Records sent to a node while it is down
# wait in its topic; its consumer group resumes after the last record it
# handled when it starts again.
#
#   ferry kafka dev &                      # a local broker on 127.0.0.1:9092
#   ferry up configs/kafka.hcl
#   ferry message send hello --from n1 --to /kafka/ferry-n2/service/uppercase
#   ferry down configs/kafka.hcl
#
# A real cluster: --var brokers=b1:9092,b2:9092 and, as its setup needs,
# tls/sasl settings (see the README's kafka transport section).

variable "brokers" {
  type        = string
  default     = "127.0.0.1:9092"
  description = "Kafka seed brokers, host:port separated by commas (ferry kafka dev prints one)."
}

variable "prefix" {
  type        = string
  default     = "ferry-"
  description = "Prefix of the two nodes' inbound topics (tests use their own)."
}

node "n2" {
  transport "inbox" {
    plugin = "kafka"
    listen = "${var.prefix}n2"
    allow  = ["echo", "uppercase"]
    # Settings apply to the node's whole kafka transport: the topic its
    # own records name for replies is its inbound topic.
    settings = {
      brokers       = var.brokers
      inbound_topic = "${var.prefix}n2"
    }
  }

  service "echo" {}
  service "uppercase" {}
}

node "n1" {
  transport "inbox" {
    plugin = "kafka"
    listen = "${var.prefix}n1"
    allow  = []
    settings = {
      brokers       = var.brokers
      inbound_topic = "${var.prefix}n1"
    }
  }

  # A connection to n2's topic: routes may name it as /worker/<id> (see
  # ferry connection list --at n1), or name the topic: /kafka/ferry-n2/...
  connection "to_n2" {
    to = node.n2.transport.inbox # plugin inherited from the listener: kafka
  }
}
