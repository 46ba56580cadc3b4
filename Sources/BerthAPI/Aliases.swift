// Short names for the most used generated containerd API types.
//
// Every alias carries an `API` prefix: BerthCore has its own domain types
// named `ContentInfo`, `Image`, `Container`, `Lease`, `Namespace`,
// `Descriptor` and `Platform`, and a module that imports both BerthCore and
// BerthAPI must be able to use those names unqualified.

// containerd.services.content.v1
public typealias APIContentInfo = Containerd_Services_Content_V1_Info
public typealias APIContentStatus = Containerd_Services_Content_V1_Status
public typealias APIWriteAction = Containerd_Services_Content_V1_WriteAction
public typealias APIWriteContentRequest = Containerd_Services_Content_V1_WriteContentRequest
public typealias APIWriteContentResponse = Containerd_Services_Content_V1_WriteContentResponse

// containerd.services.{images,containers,leases,namespaces}.v1
public typealias APIImage = Containerd_Services_Images_V1_Image
public typealias APIContainer = Containerd_Services_Containers_V1_Container
public typealias APILease = Containerd_Services_Leases_V1_Lease
public typealias APINamespace = Containerd_Services_Namespaces_V1_Namespace

// containerd.services.events.v1 / introspection.v1
public typealias APIEnvelope = Containerd_Services_Events_V1_Envelope
public typealias APIPlugin = Containerd_Services_Introspection_V1_Plugin

// containerd.types
public typealias APIDescriptor = Containerd_Types_Descriptor
public typealias APIMount = Containerd_Types_Mount
public typealias APIPlatform = Containerd_Types_Platform
