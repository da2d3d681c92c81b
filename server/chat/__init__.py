"""The chat service: plan a turn, ask Kimi, and read the answer through the emulation (what every dialect calls)."""
