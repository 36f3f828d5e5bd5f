// Named constants of Intel TDX quotes, DCAP collateral, the PCS API and configfs-tsm.

// ---- Trust anchor ----------------------------------------------------------------------

/**
 * SHA-256 fingerprint (of the DER) of the Intel SGX Root CA, the only root every chain must
 * end at. Pinned here, so an untrusted PCCS can at worst make verification fail.
 */
export const INTEL_SGX_ROOT_CA_SHA256 =
  '44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3'
/** Where Intel publishes the Root CA's CRL (the root certificate's CRL distribution point). */
export const INTEL_ROOT_CA_CRL_URL = 'https://certificates.trustedservices.intel.com/IntelSGXRootCA.der'

// ---- Quote layout (Intel TDX DCAP Quoting Library API, appendix "Quote format") ----------

export const QUOTE_HEADER_BYTES = 48
export const QUOTE_VERSION_4 = 4
export const QUOTE_VERSION_5 = 5
export const TEE_TYPE_TDX = 0x81
export const ATTESTATION_KEY_TYPE_ECDSA_P256 = 2
/** Intel's QE vendor id, 939A7233-F79C-4CA9-940A-0DB3957F0607. */
export const INTEL_QE_VENDOR_ID = '939a7233f79c4ca9940a0db3957f0607'

/** v5 body descriptor types. */
export const BODY_TYPE_TD_REPORT10 = 2
export const BODY_TYPE_TD_REPORT15 = 3
export const TD_REPORT10_BYTES = 584
export const TD_REPORT15_BYTES = 648
export const MEASUREMENT_BYTES = 48
export const REPORT_DATA_BYTES = 64

export const ECDSA_SIGNATURE_BYTES = 64
export const ECDSA_P256_PUBLIC_KEY_BYTES = 64
export const QE_REPORT_BYTES = 384

/** Certification data types. */
export const CERT_DATA_PCK_CHAIN = 5
export const CERT_DATA_QE_REPORT = 6

// ---- Collateral ------------------------------------------------------------------------

/** OID of Intel's SGX extension in PCK certificates, and its members used for TCB matching. */
export const OID_SGX_EXTENSION = '1.2.840.113741.1.13.1'
export const OID_SGX_PPID = `${OID_SGX_EXTENSION}.1`
export const OID_SGX_TCB = `${OID_SGX_EXTENSION}.2`
export const OID_SGX_PCESVN = `${OID_SGX_TCB}.17`
export const OID_SGX_CPUSVN = `${OID_SGX_TCB}.18`
export const OID_SGX_PCEID = `${OID_SGX_EXTENSION}.3`
export const OID_SGX_FMSPC = `${OID_SGX_EXTENSION}.4`
export const OID_BASIC_CONSTRAINTS = '2.5.29.19'

export const PCK_PLATFORM_CA_CN = 'Intel SGX PCK Platform CA'
export const PCK_PROCESSOR_CA_CN = 'Intel SGX PCK Processor CA'

export const TCB_INFO_ID_TDX = 'TDX'
export const TCB_INFO_VERSION_TDX = 3
export const QE_IDENTITY_ID_TDX = 'TD_QE'

/** TCB statuses accepted when a policy names none. */
export const DEFAULT_TDX_TCB_STATUSES: readonly string[] = ['UpToDate']

// ---- PCCS / Intel PCS ------------------------------------------------------------------

/** Intel's Provisioning Certification Service; TDX collateral needs no API key. */
export const INTEL_PCS_URL = 'https://api.trustedservices.intel.com'
/** Environment variable naming the PCCS the CLI fetches collateral from. */
export const PCCS_URL_ENV = 'COCOON_PCCS_URL'
/** Budget for one collateral request to the PCCS. */
export const PCCS_FETCH_TIMEOUT_MS = 10_000

// ---- Caches ----------------------------------------------------------------------------

/** Default lifetime of a cached verification verdict (never beyond the collateral's own expiry). */
export const TDX_RESULT_TTL_MS = 10 * 60_000
/** Default lifetime of a cached refusal, kept short so a fixed PCCS is noticed quickly. */
export const TDX_FAILURE_TTL_MS = 30_000
/** Default bound on cached verdicts; the least recently used is evicted first. */
export const TDX_RESULT_CACHE_MAX_ENTRIES = 10_000

// ---- configfs-tsm ----------------------------------------------------------------------

/** Where the kernel exposes TSM reports (Linux >= 6.7, CONFIG_TSM_REPORTS). */
export const TSM_REPORT_ROOT = '/sys/kernel/config/tsm/report'
/** The `provider` a TDX guest's report directory must name. */
export const TSM_PROVIDER_TDX = 'tdx_guest'
/** How often an EBUSY answer is retried before giving up. */
export const TSM_MAX_BUSY_RETRIES = 8
/** How often a generation race (someone else wrote our inblob) is retried. */
export const TSM_MAX_RACE_RETRIES = 3
/** First back-off after EBUSY; doubles each retry up to TSM_MAX_BACKOFF_MS. */
export const TSM_BUSY_BACKOFF_MS = 20
export const TSM_MAX_BACKOFF_MS = 1_000
