"""Sans-I/O SMPP 3.4: constants, PDUs, codec, framing, sessions. Standard library only."""
