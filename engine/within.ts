// Waiting with a deadline: the one race of a promise against a timer, and
// the clearing of that timer, for every part that waits at most so long.

/** `work`'s value, or `late` once `ms` have passed first. A rejection of `work` is passed on. */
export async function within<T, L>(work: Promise<T>, ms: number, late: L): Promise<T | L> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([work, new Promise<L>((resolve) => (timer = setTimeout(() => resolve(late), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
