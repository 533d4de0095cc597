"""The outside set: 74 Keras runs written by a red-teamer who had read neither the rules nor
the corpus, each faulty run verified against a healthy twin (README.md)."""
