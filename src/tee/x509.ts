// The one place @peculiar/x509 is loaded: its Reflect prerequisite (reflect-metadata) first, then node's WebCrypto as its crypto provider.

import 'reflect-metadata'
import { webcrypto } from 'node:crypto'
import * as x509 from '@peculiar/x509'

x509.cryptoProvider.set(webcrypto as unknown as Crypto)

export { x509 }
