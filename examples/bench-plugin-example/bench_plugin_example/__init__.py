"""Example bench plugin: the ``mean_logits`` method and the ``xor_pairs`` dataset."""
