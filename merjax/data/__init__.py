"""Example schema, label maps, subject-partitioned protocols, clip ops and the input pipeline."""
