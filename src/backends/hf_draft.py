"""An HF draft (a backends.target.Target) behind the llama.cpp Draft's interface, for one sequence: what lets
DuoDecoding's drafter and worker run a draft on the target's own device (PEARL). The drafter asks only for one
sequence of greedy tokens here, so sequence ids other than 0 are refused."""
import torch


class HFDraft:
    n_seq = 1

    def __init__(self, model):
        self.model = model
        self.n_vocab = model.model.get_output_embeddings().weight.shape[0]
        self.n_real = model.n_real
        self.lengths = [0]
        self.threads = torch.get_num_threads()
        self.path = model.path
        model.reset()

    def set_threads(self, n):
        """torch's threads are the process's: the draft shares them with the target, as it shares its cores."""
        self.model.set_threads(n)
        self.threads = n

    def decode(self, rows):
        """Rows of (token, seq_id, want_logits), all of sequence 0, in one forward; the logits of the rows that asked."""
        if any(seq != 0 for _, seq, _ in rows):
            raise ValueError("an HF draft holds one sequence")
        if not rows:
            return torch.empty(0, self.n_vocab).numpy()
        logits = self.model.forward([t for t, _, _ in rows])
        self.lengths[0] += len(rows)
        want = [i for i, (_, _, w) in enumerate(rows) if w]
        return logits[want].cpu().numpy()

    def eval(self, tokens, seq=0, all_logits=False):
        logits = self.decode([(t, seq, all_logits or i == len(tokens) - 1) for i, t in enumerate(tokens)])
        return logits if all_logits else logits[-1]

    def rollback(self, length, seq=0):
        if length < self.lengths[0]:
            self.model.rollback(length)
            self.lengths[0] = length

    def clear(self):
        self.model.reset()
        self.lengths = [0]

    def keep_only(self, seq):
        if seq != 0:
            raise ValueError("an HF draft holds one sequence")

    def fork(self, src, dst, length=None):
        raise ValueError("an HF draft holds one sequence")

    def close(self):
        pass
