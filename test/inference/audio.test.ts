// Audio uploads: container sniffing, durations measured from the samples (not the header's claims), PocketSphinx output parsing.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parsePocketSphinxOutput } from '../../src/inference/pocketsphinx.ts'
import { sniffAudioFormat, wavDurationSec } from '../../src/inference/audio.ts'
import { wav } from '../helpers/speech.ts'

test('containers are told apart by their first bytes', () => {
  assert.equal(sniffAudioFormat(wav({ rate: 16000, bits: 16, dataBytes: 10 })), 'wav')
  assert.equal(sniffAudioFormat(Buffer.from('fLaC\0\0\0\x22')), 'flac')
  assert.equal(sniffAudioFormat(Buffer.concat([Buffer.from('OggS'), Buffer.alloc(24), Buffer.from('\x01vorbis')])), 'ogg')
  assert.equal(sniffAudioFormat(Buffer.concat([Buffer.from('OggS'), Buffer.alloc(24), Buffer.from('OpusHead')])), 'opus')
  assert.equal(sniffAudioFormat(Buffer.from('ID3\x04\0\0')), 'mp3')
  assert.equal(sniffAudioFormat(Buffer.from([0x1a, 0x45, 0xdf, 0xa3, 0, 0])), 'webm')
  assert.equal(sniffAudioFormat(Buffer.from('hello, not audio')), undefined)
})

test('a WAV lasts as long as its samples at its rate, whatever byte rate its header claims', () => {
  assert.equal(wavDurationSec(wav({ rate: 16000, bits: 16, dataBytes: 64000 })), 2)
  assert.equal(wavDurationSec(wav({ rate: 22050, channels: 2, bits: 16, dataBytes: 22050 * 4 * 3 })), 3)
  // A header claiming 100x the real byte rate would bill 1/100 of the audio that gets decoded.
  assert.equal(wavDurationSec(wav({ rate: 16000, bits: 16, claimedByteRate: 3_200_000, dataBytes: 64000 })), 2)
  // A data size that overstates what is there: only the bytes present count.
  assert.equal(wavDurationSec(wav({ rate: 8000, bits: 8, dataBytes: 8000, dataSize: 0x7fffffff })), 1)
  // Streamed WAVs (size 0 or 0xFFFFFFFF) run to the end of the file.
  assert.equal(wavDurationSec(wav({ rate: 8000, bits: 8, dataBytes: 4000, dataSize: 0xffffffff })), 0.5)
  // Compressed WAV (IMA ADPCM): not computable here, so sox measures it.
  assert.equal(wavDurationSec(wav({ format: 0x11, rate: 8000, bits: 4, dataBytes: 4000 })), undefined)
  assert.throws(() => wavDurationSec(Buffer.from('RIFF\0\0\0\0WAVEjunk')), /no readable fmt and data chunks/)
})

test('PocketSphinx output becomes one segment per utterance, without fillers or pronunciation variants', () => {
  const out = [
    'hello world it is a test',
    '<s> 0.000 0.020 0.999200',
    'hello 0.030 0.280 0.842805',
    'world 0.290 0.700 0.998900',
    '<sil> 0.710 0.800 0.9',
    'it 0.810 0.830 0.195501',
    'is 0.840 0.940 0.863366',
    'a 0.950 1.000 0.539522',
    'test(2) 1.010 1.320 0.169941',
    '</s> 1.330 1.400 1.000000',
    'by friday',
    '<s> 2.000 2.020 0.9',
    'by 2.030 2.200 0.5',
    '[NOISE] 2.200 2.300 0.5',
    'friday(2) 2.300 2.700 1.000000',
    '</s> 2.710 2.800 1.0',
    '',
  ].join('\n')
  assert.deepEqual(parsePocketSphinxOutput(out), [
    { id: 0, start: 0.03, end: 1.32, text: 'hello world it is a test' },
    { id: 1, start: 2.03, end: 2.7, text: 'by friday' },
  ])
  assert.deepEqual(parsePocketSphinxOutput(''), [])
})
