# The agent's MQTT 3.1.1 client: packet writer, inbound parser, link supervisor.
