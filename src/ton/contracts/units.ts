// TON's unit: every amount in this code base is in nanoTON (a bigint named *_NANO), and this is the one TON.

/** One TON in nanoTON. */
export const ONE_TON_NANO = 1_000_000_000n
